"""Hooks on shared model objects.

`load_causal_lm` / `load_encoder` hand one model object to every user in a process (a chat model and the
privacy sentinel share SmolLM2; adapted encoders share their base), and torch module hooks belong to that object,
so every thread's forward runs them. A hook armed for one call must act only on the forwards of the thread that
armed it: neither record another thread's activations nor stop its forward.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


def thread_owned(hook: Callable[..., Any]) -> Callable[..., Any]:
    """`hook` for the calling thread only: in any other thread the wrapper returns None (a no-op torch hook)."""
    owner = threading.get_ident()

    @functools.wraps(hook)
    def owned(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)

    return owned
