"""pytest plugin: run an SDK's own test suite bare, or with every client it builds wrapped by llmpulse.

Loaded by ``run.py`` as ``-p sdkh_plugin`` (this folder on ``PYTHONPATH``). Environment:

    SDKH_MODE      ``baseline`` (nothing patched) or ``wrapped``
    SDKH_RESULTS   JSON file receiving ``{nodeid: {outcome, seconds, longrepr?, events?, clients?}}``
    SDKH_CLIENTS   JSON file (one per xdist worker: ``<path>.<worker>``) receiving the per-class counts
    SDKH_WHY       the same for what wrap() said when a class fell back, was unsupported or raised

Both modes deselect the ``tests/api_resources/`` tests that need the Prism mock server
(those without a respx/respx2/http-snapshot fixture), so the same offline subset runs.

Wrapped mode finds the SDKs' client classes as the subclasses of their ``SyncAPIClient``
and ``AsyncAPIClient`` (those defined now, and, through ``__init_subclass__``, every one
defined later: the SDK's lazily imported ones and the tests' own subclasses) and patches
their ``__init__``. When the outermost constructor returns and the client was built by the
test (not by the SDK itself, nor by llmpulse making its copy), a shallow clone of it goes
through the public ``llmpulse.wrap()`` and the instance the test holds takes the result's
class and *shares its ``__dict__``*: the test's object behaves as the object wrap() returned
in everything but identity, and ``llmpulse.unwrap()`` of it returns the clone (the bare
client). Each construction is counted per class as wrapped, fell back (wrap() returned the
client itself after a RuntimeWarning), unsupported (``llmpulse.UnsupportedClientError``: the
client stays bare and the test goes on), raised (any other exception: likewise), sdk (built
by the SDK's own code: left as it is) or inner (built inside llmpulse).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import pkgutil
import sys
import threading
import warnings
import weakref
from collections import Counter, defaultdict
from typing import Any

import pytest

MODE = os.environ.get("SDKH_MODE", "baseline")
RESULTS_PATH = os.environ.get("SDKH_RESULTS")
CLIENTS_PATH = os.environ.get("SDKH_CLIENTS")
WHY_PATH = os.environ.get("SDKH_WHY")

_SDKS = ("openai", "anthropic")
# Fixtures that make an api_resources test offline (the others need the Prism mock server).
_OFFLINE_FIXTURES = {"respx_mock", "respx2_mock", "snapshot_client", "async_snapshot_client", "http_snapshot"}
_LONGREPR_CHARS = 4000
# How far up the stack a construction looks for an llmpulse frame (its copy()/with_options()).
_STACK_DEPTH = 40
_WHY_CHARS = 300  # of a fallback warning or an error, per class
_SINK_KEEP = 2000  # events the capturing sink holds before it is emptied (between tests)

_results: dict[str, dict[str, Any]] = {}
_tls = threading.local()


class _State:
    # What the worker counted, and the sink the wrapped clients report to.
    def __init__(self) -> None:
        self.by_class: defaultdict[str, Counter[str]] = defaultdict(Counter)  # {class: {status: n}}
        self.current: dict[str, Counter[str]] | None = None  # the same for the test now running
        self.fell_back: set[type] = set()
        self.patched: set[type] = set()
        # What wrap() returned, alive as long as the test's instance that shares its __dict__.
        self.keep: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.sink: Any = None
        self.why: defaultdict[str, set[str]] = defaultdict(set)  # {class: {warning or error text}}


_state = _State()


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _count(cls: type, status: str, why: str | None = None) -> None:
    name = _class_name(cls)
    if why is not None:
        _state.why[name].add(f"{status}: {why}"[:_WHY_CHARS])
    _state.by_class[name][status] += 1
    if _state.current is not None:
        _state.current.setdefault(name, Counter())[status] += 1


# ----------------------------------------------------------------- wrapping


def _builder(frame: Any) -> str:
    """Who built the client: ``inner`` (llmpulse on the stack), ``sdk`` (the SDK's own code) or ``test``."""
    caller = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    f = frame
    for _ in range(_STACK_DEPTH):
        if f is None:
            break
        if str(f.f_globals.get("__name__", "")).startswith("llmpulse"):
            return "inner"
        f = f.f_back
    return "sdk" if caller.split(".")[0] in _SDKS else "test"


def _adopt(client: Any) -> None:
    import llmpulse  # noqa: PLC0415 - baseline runs must not import it

    cls = type(client)
    clone = object.__new__(cls)
    clone.__dict__.update(client.__dict__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = llmpulse.wrap(clone, sinks=[_state.sink])
        except llmpulse.UnsupportedClientError as exc:
            _count(cls, "unsupported", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - counted; the test goes on with the bare client
            _count(cls, "raised", f"{type(exc).__name__}: {exc}")
            return
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    # The suites turn warnings into errors: replay what wrap() said, but its fallback warning.
    for w in caught:
        if not (result is clone and w in runtime):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    # wrap() warns once per class: later fallbacks of that class are silent.
    if result is clone and (runtime or cls in _state.fell_back):
        _state.fell_back.add(cls)
        _count(cls, "fell_back", "; ".join(str(w.message) for w in runtime) or None)
        return
    if type(result) is not cls:
        try:
            client.__class__ = type(result)
        except TypeError as exc:
            _count(cls, "raised", f"adopting {_class_name(type(result))}: {exc}")
            return
    client.__dict__ = result.__dict__
    _state.keep[client] = result
    # llmpulse knows a wrapped client by identity (its weak registry), not by its attributes:
    # record the test's object as the wrapped one, made from the same original.
    from llmpulse import _registry  # noqa: PLC0415 - baseline runs must not import llmpulse

    hook = _registry.hook_of(result)
    if hook is not None:
        _registry.register(client, hook, llmpulse.unwrap(result))
    if "_middleware_chain" in vars(client):
        # anthropic's prebuilt chain is bound to the object it was built for: build it for this one.
        client._middleware_chain = client._build_middleware_chain()
    _count(cls, "wrapped")


def _patch(cls: type) -> None:
    if cls in _state.patched or "__init__" not in cls.__dict__:
        return
    _state.patched.add(cls)
    original = cls.__dict__["__init__"]

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        depth = getattr(_tls, "depth", 0)
        _tls.depth = depth + 1
        try:
            original(self, *args, **kwargs)
        finally:
            _tls.depth = depth
        if depth:
            return
        builder = _builder(sys._getframe(1))
        if builder == "test":
            _adopt(self)
        else:
            _count(type(self), builder)

    __init__.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def _subclasses(base: type) -> list[type]:
    found: list[type] = []
    todo: list[type] = [base]
    while todo:
        sub: type
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def _hook_subclassing(base: type) -> None:
    own = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: Any, /, **kwargs: Any) -> None:
        if own is not None:
            own.__get__(None, cls)(**kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[arg-type]
        _patch(cls)

    base.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]


def _install() -> None:
    from llmpulse.testing import CapturingSink  # noqa: PLC0415 - baseline runs must not import llmpulse

    _state.sink = CapturingSink()
    for sdk in _SDKS:
        try:
            base_client = importlib.import_module(f"{sdk}._base_client")
        except ImportError:
            continue
        for base in (base_client.SyncAPIClient, base_client.AsyncAPIClient):
            _hook_subclassing(base)
            for cls in _subclasses(base):
                _patch(cls)


# ----------------------------------------------------------------- pytest hooks


def pytest_configure(config: pytest.Config) -> None:
    """Wrapped mode: patch the client classes before the suite's conftest and modules build any."""
    if MODE == "wrapped":
        _install()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests that need the Prism mock server."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        needs_prism = "/tests/api_resources/" in str(getattr(item, "path", "")) and not (
            _OFFLINE_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        (drop if needs_prism else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Count the clients built and the events emitted while this test runs."""
    _state.current = {}
    item.stash[_events_key] = len(_state.sink.events) if _state.sink is not None else 0
    if MODE == "wrapped":
        _fresh_policy_state()
    try:
        yield
    finally:
        _state.current = None
        if _state.sink is not None and len(_state.sink.events) > _SINK_KEEP:
            _state.sink.clear()


_events_key = pytest.StashKey[int]()


def _fresh_policy_state() -> None:
    """Start each test with llmpulse's per-endpoint state empty, as a fresh process would.

    The suites run thousands of independent scenarios against one address (127.0.0.1:4010),
    many of them failing on purpose: carried from test to test, those failures would open the
    breaker and spend the retry budget of the next test's healthy calls. That is what the
    features are for, and not what a test of one scenario means.
    """
    from llmpulse import _wrap  # noqa: PLC0415 - baseline runs must not import llmpulse

    for _, policies in _wrap._defaults:
        object.__setattr__(policies, "_state", type(policies._state)())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Put the counts on the teardown report (which xdist carries to the controller)."""
    outcome = yield
    report = outcome.get_result()
    # Once per test, at teardown: what setup, call and teardown built between them.
    if MODE != "wrapped" or call.when != "teardown":
        return
    if _state.current:
        report.user_properties.append(("sdkh_clients", {k: dict(v) for k, v in _state.current.items()}))
    if _state.sink is not None:
        events = len(_state.sink.events) - item.stash.get(_events_key, 0)
        report.user_properties.append(("sdkh_events", events))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Fold the phases' reports into one outcome per test."""
    rec = _results.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
    rec["seconds"] = round(rec["seconds"] + report.duration, 3)
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail:
            rec["outcome"] = "xfailed" if report.skipped else "xpassed"
        else:
            rec["outcome"] = report.outcome
    elif report.failed:
        rec["outcome"] = "failed" if rec["outcome"] == "failed" else "error"
    elif report.skipped and report.when == "setup":
        rec["outcome"] = "xfailed" if xfail else "skipped"
    if report.failed:
        text = str(report.longrepr)[-_LONGREPR_CHARS:]
        rec["longrepr"] = rec.get("longrepr", "") + f"[{report.when}] {text}"
    for key, value in report.user_properties:
        if key == "sdkh_clients":
            rec["clients"] = value
        elif key == "sdkh_events":
            rec["events"] = value


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the per-class counts (each worker) and the results (the controller)."""
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if CLIENTS_PATH and MODE == "wrapped":
        with open(f"{CLIENTS_PATH}.{worker or 'main'}", "w") as f:
            json.dump({k: dict(v) for k, v in sorted(_state.by_class.items())}, f, indent=1)
    if WHY_PATH and MODE == "wrapped":
        with open(f"{WHY_PATH}.{worker or 'main'}", "w") as f:
            json.dump({k: sorted(v) for k, v in sorted(_state.why.items())}, f, indent=1)
    if worker is None and RESULTS_PATH:
        with open(RESULTS_PATH, "w") as f:
            json.dump(_results, f, indent=0, sort_keys=True)


def known_classes() -> list[str]:
    """Every client class of the installed SDKs (imports their modules but types/ and resources/)."""
    names: list[str] = []
    for sdk in _SDKS:
        try:
            package = importlib.import_module(sdk)
            base_client = importlib.import_module(f"{sdk}._base_client")
        except ImportError:
            continue
        for info in pkgutil.walk_packages(package.__path__, f"{sdk}."):
            if {"types", "resources", "_vendor"} & set(info.name.split(".")[1:]):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - an optional extra not installed: its classes stay unknown
                continue
        for base in (base_client.SyncAPIClient, base_client.AsyncAPIClient):
            names.extend(_class_name(cls) for cls in _subclasses(base))
    return sorted(set(names))


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    json.dump(known_classes(), sys.stdout, indent=1)
