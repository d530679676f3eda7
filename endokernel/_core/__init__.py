"""Private pieces shared by the public functions, the ops and the backends: argument checks (``validate``),
which positions a reward needs (``layout``), the logit transforms (``transform``), the finalizer that turns
statistics into rewards (``finalize``), output allocation that tests can poison (``alloc``), shared types
(``types``) and the time / memory measurement of the demo, the benchmarks and the tests (``memory``).

Nothing here is public API: import the names from ``endokernel`` instead."""
