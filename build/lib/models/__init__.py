"""The model zoo: plain NumPyro models, each usable by EM and by MCMC unchanged."""
