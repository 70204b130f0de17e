"""CI providers: each one a module that imports ``chainer.providers.base``; the rest of chainer asks this package.

``base`` holds what providers and the core share (``Param``, ``ActionSpec``, ``Catalogue``). The registry
of providers comes here.
"""
