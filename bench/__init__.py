"""Benchmarks of chainer (DESIGN §9): ``bench/run`` runs the suite, ``bench/rules_match.py`` the rule matcher."""
