import os

# Triton's interpreter must be chosen before triton is imported: it runs the shipped kernels on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# tests/test_property.py: 'ci' is bounded (a few minutes in all on 2 cores), 'long' runs a campaign (2000 examples
# a test, or ENDOKERNEL_HYPOTHESIS_EXAMPLES); both print the
# blob that reproduces a failure (@reproduce_failure) and keep no deadline (a drawn problem's size varies 1000x)
_UNBOUNDED = dict(deadline=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, **_UNBOUNDED)
settings.register_profile("long", max_examples=int(os.environ.get("ENDOKERNEL_HYPOTHESIS_EXAMPLES", "2000")),
                          **_UNBOUNDED)
settings.load_profile(os.environ.get("ENDOKERNEL_HYPOTHESIS", "ci"))


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every buffer the package allocates for results starts as NaN (or the most negative integer), so an element
    a kernel forgets to write shows up in the result."""
    import endokernel._core.alloc

    monkeypatch.setattr(endokernel._core.alloc, "POISON", True)


@pytest.fixture(autouse=True)
def cpu_path(request):
    """A test parametrized with a ``cpu_path`` marker (``cases.cpp_path_params``) runs on that forced C++ code
    path: variant, tile engine, tile dtype and thread count."""
    marker = request.node.get_closest_marker("cpu_path")
    if marker is None:
        yield
        return
    from endokernel.backends.cpu_paths import cpu_paths

    with cpu_paths(**marker.args[0]):
        yield
