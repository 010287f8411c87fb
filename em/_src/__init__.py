"""em's private implementation, by idea (the public API is what ``em/__init__.py`` exports).

- ``reading/``: the model as EM sees it. ``derive`` (the one entry from ``(model, args,
  kwargs)``, and the one "evaluate at θ"), ``arguments`` (static and traced),
  ``sites`` (θ, Z, X), ``checks`` (input errors before compiling), ``partly_observed``
  (``obs_mask``), ``masking``, ``scans`` (a homogeneous chain's short trace),
  ``numpyro_internals`` (every NumPyro internal read, in one place).
- ``kernels/``: the E-step. ``enumeration`` (the funsor contraction and its gradient),
  ``chain`` (forward-backward and Viterbi), ``families`` (sufficient statistics),
  ``estep`` (summaries and Q), ``boundary`` (boundary cells held constant in Q),
  ``initialisation`` (the random start).
- ``loop/``: ``algorithm`` (``init`` and ``step``), ``mstep`` (Newton, optax),
  ``driver`` (``fit``: the compiled loop, restarts, stopping, checks), ``results``.
- ``reporting/``: ``posterior``, ``pointwise``, ``information`` (Laplace), ``mcmc``
  (NUTS), ``inference_data``, ``labels`` (label switching), ``comparison``.
- ``compilation`` (jit with EM's XLA options), ``typing`` (the public type aliases).
"""
