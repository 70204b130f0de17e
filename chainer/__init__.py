"""chainer: chain CI builds across projects, organisations and CI providers."""

__version__ = "0.1.0"
