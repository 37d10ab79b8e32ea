"""What the scrubbing step costs: per error message, per captured prompt, with and without rules.

A healthy call that captures no content has nothing to scrub and pays nothing; these are the
costs on the paths that do: a failed call's error text and opt-in captured content.

    python benchmarks/scrub.py
"""

from __future__ import annotations

import timeit

from llmpulse._redact import Scrubber, pii, secrets_of

KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9nP2qR5"
ERROR_401 = (
    "Error code: 401 - Incorrect API key provided: sk-proj-********************************************"
    "R5. You can find your API key at https://platform.openai.com/account/api-keys."
)
ERROR_400 = "Invalid 'messages[0].content': string too long. Expected a string with maximum length 1048576."
PROMPT = ('{"messages":[{"role":"user","content":"' + "Summarise the incident timeline for the team. " * 700)[
    :32_768
]


def _time(label: str, fn: object, number: int) -> None:
    seconds = min(timeit.repeat(fn, number=number, repeat=5))  # type: ignore[arg-type]
    print(f"{label:<52} {seconds / number * 1e6:9.1f} µs")


def main() -> None:
    secrets = secrets_of([KEY])
    plain, ruled = Scrubber(), Scrubber((pii,))
    _time("401 message, the client's key + known shapes", lambda: plain.error(ERROR_401, secrets), 20_000)
    _time("401 message, + pii rules", lambda: ruled.error(ERROR_401, secrets), 20_000)
    _time("400 message, + pii rules", lambda: ruled.error(ERROR_400, secrets), 20_000)
    _time("32 KiB captured prompt, known shapes", lambda: plain.scrub(PROMPT, secrets), 200)
    _time("32 KiB captured prompt, + pii rules", lambda: ruled.scrub(PROMPT, secrets), 200)


if __name__ == "__main__":
    main()
