"""Quieter diffusers and transformers while sdwidgets loads models (their warnings and bars are
not the user's business)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_diffusers():
    """Only errors from diffusers' logger inside the block."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


@contextlib.contextmanager
def quiet_loading():
    """No per-component loading bars from diffusers and transformers while a model loads."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    shown = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if shown[0]:
            dlog.enable_progress_bar()
        if shown[1]:
            tlog.enable_progress_bar()
