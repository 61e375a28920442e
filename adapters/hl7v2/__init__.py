"""HL7 v2 (2.3 to 2.8) in: ADT and ORU^R01 messages to FHIR R4 transaction Bundles.

Modules, in the order a message meets them:

- `message`: bytes -> segments (python-hl7 for splitting, our escapes and delimiters)
- `translate`: the message -> a transaction Bundle (`patient`, `visit`, `results` map the
  segments; `datatypes` and `tables` the HL7 data types and tables; `bundle` the entries)
- `structure`: optional strict check against the version's structure (hl7apy)
- `ack`: the AA/AE/AR acknowledgement with its ERR segment
- `mllp`: the asyncio MLLP listener

The mapping is described in docs/hl7v2-mapping.md.
"""

from __future__ import annotations

from adapters.hl7v2.datatypes import Hl7Options
from adapters.hl7v2.errors import Hl7Error
from adapters.hl7v2.translate import translate_bytes, translator

__all__ = ["Hl7Error", "Hl7Options", "translate_bytes", "translator"]
