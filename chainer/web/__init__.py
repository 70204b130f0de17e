"""The HTTP face of chainer (DESIGN §3, §8), one module per audience.

- ``hooks``: the webhook endpoints the providers post to; intake's outcomes become HTTP statuses there.
- ``operator``: the bearer-authenticated operator API (audit, events, chains, dlq, rules, explain);
  ``views`` builds its event and chain answers, ``params`` checks its query strings.
- ``probes``: ``/healthz`` and ``/readyz``.
- ``common``: what they share: the app's state, JSON answers, reading a bounded JSON body.

``chainer.app.create_app`` composes them; nothing here builds a store or loads rules.
"""
