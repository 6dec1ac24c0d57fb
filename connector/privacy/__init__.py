"""Personal information under POPIA: erasing a person (`connector forget`), retention, opt-outs.

The store does the erasing (store/erasure.py, store/scrub.py) and the sealing at rest
(store/sealing.py); this package decides what to erase and when, and asks the CRMs to erase too.
It imports the store and the runtime; nothing below them imports it (its settings module aside).
"""
