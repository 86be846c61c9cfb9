"""Lightning's advertisement, dropped where Lightning logs it (no global log or warning filter).

Every ``lightning.Trainer`` logs a "💡 Tip" recommending a cloud logging service when that
service's package is not installed. It says nothing about the run, so
:func:`drop_lightning_tips` removes exactly those records from the one logger Lightning
sends them to; every other Lightning message (and every warning) still reaches the user.
"""

from __future__ import annotations

import logging

#: The logger Lightning's ``rank_zero_info`` writes to.
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
#: The start of the advertisement's text.
TIP_PREFIX = "💡 Tip:"


class _DropTips(logging.Filter):
    """Reject records whose message starts with :data:`TIP_PREFIX`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def drop_lightning_tips() -> None:
    """Install the tip filter on Lightning's rank-zero logger (idempotent).

    Call it before building a ``lightning.Trainer``: the tip is logged from the
    Trainer's constructor.
    """
    log = logging.getLogger(RANK_ZERO_LOGGER)
    if not any(isinstance(f, _DropTips) for f in log.filters):
        log.addFilter(_DropTips())
