"""The customer's check of a downloaded portal version: ``python -m portal_verify FOLDER``.

Everything is in ``__main__.py``, which customers get as one file (importing it here would make
``python -m portal_verify`` load it twice).
"""
