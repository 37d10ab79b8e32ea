"""⑥ Alerts: rolling-window rules over every call, in process, with no Prometheus needed.

`AlertEngine` counts each finished call (O(1), on the caller's path) and
evaluates its rules on its own thread; each change of a rule's state is one
`Alert`, delivered to the alert sinks (logs by default, webhooks for Slack,
Discord or any JSON receiver, or anything with ``emit(alert)``).
"""

from ._alert import Alert, AlertSink, Evidence, Severity, Status
from ._config import AlertConfig, Rule
from ._engine import AlertEngine
from ._sinks import LogAlertSink, WebhookAlertSink, WebhookError

__all__ = [
    "Alert",
    "AlertConfig",
    "AlertEngine",
    "AlertSink",
    "Evidence",
    "LogAlertSink",
    "Rule",
    "Severity",
    "Status",
    "WebhookAlertSink",
    "WebhookError",
]
