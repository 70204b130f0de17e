"""chainer: chain CI builds across Codeship and CircleCI projects."""

__version__ = "0.1.0"
