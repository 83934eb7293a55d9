"""cert-reloader: detect SWAG renewals, validate, publish the pair atomically to the Storage Box.

Layout: ``settings`` (environment), ``source`` (safe reading of certbot's live dir), ``decide``
(pure change detection and health rules), ``publish`` (atomic write, manifest last), ``watch``
(inotify + periodic check, debounced), ``service`` (the idempotent reconcile and the loop),
``metrics`` and ``cli``.
"""
