"""What Lightning says about itself rather than about the run, kept out of the user's log.

No global log level or warning filter is set; each message is removed where it arises:

* every ``lightning.Trainer`` logs a "💡 Tip" recommending a cloud logging service when that
  service's package is not installed. :func:`drop_lightning_tips` removes exactly those
  records from the one logger Lightning sends them to;
* :func:`lightning_loop` wraps a Trainer's ``fit``/``validate``/``test``/``predict`` call in a
  scoped :func:`warnings.catch_warnings` that drops two warnings about Lightning's own
  internals (and, when a fit resumes, the one about its own checkpoint folder), restoring
  the caller's filters on exit.

Every other Lightning message, and every other warning, still reaches the user.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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


#: Lightning 2.6 builds ``torch.utils._pytree.LeafSpec`` for every loader it iterates, which
#: recent torch releases deprecate (2.13 does); nothing a caller passes avoids it (a loader
#: is always a leaf).
LEAFSPEC_MODULE = r"lightning\.pytorch\.utilities\._pytree"
LEAFSPEC_MESSAGE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
#: Lightning's advice to add DataLoader workers. The loops wrapped here iterate bags of
#: features already in memory (or, in extraction, loaders whose worker count the user set),
#: where workers would only add start-up cost.
FEW_WORKERS_MESSAGE = r"The '\w+' does not have many workers"
#: Lightning's warning when a fit starts with checkpoints in the checkpoint folder. A fit
#: that resumes from that folder's own ``last.ckpt`` is meant to find them there.
RESUMED_DIR_MESSAGE = r"Checkpoint directory .* exists and is not empty"


@contextmanager
def lightning_loop(resuming: bool = False) -> Iterator[None]:
    """Run one Lightning loop without the two warnings about Lightning's own internals.

    Args:
        resuming: The loop is a fit resumed from its own checkpoint folder: Lightning's
            warning that the folder is not empty (:data:`RESUMED_DIR_MESSAGE`) is dropped
            too. A fresh fit into a folder with checkpoints still warns.

    The filters live only inside the ``with`` block (a :func:`warnings.catch_warnings`
    scope); the caller's filters are restored on exit, and every other warning passes.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LEAFSPEC_MESSAGE, module=LEAFSPEC_MODULE)
        warnings.filterwarnings("ignore", message=FEW_WORKERS_MESSAGE)
        if resuming:
            warnings.filterwarnings("ignore", message=RESUMED_DIR_MESSAGE)
        yield
