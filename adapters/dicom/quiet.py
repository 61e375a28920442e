"""Keep element values out of the server log.

pydicom reports oddities it reads past (an invalid UI, an unknown character set) through
its "pydicom" logger and through Python warnings, quoting the element's value, and any
element it validates may be a patient's name or identifier. Its warnings are silenced
(the checks in adapters.dicom.reading decide what is refused, and say why without values)
and its log records keep their level with the text replaced.
"""

from __future__ import annotations

import logging
import warnings

WITHHELD = "pydicom reported a problem with an element value (text withheld: it may " \
           "quote patient data)"


class _WithholdValues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            record.msg = WITHHELD
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = _WithholdValues()


def install() -> None:
    """Idempotent: called when the DICOM feed is imported."""
    logger = logging.getLogger("pydicom")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
