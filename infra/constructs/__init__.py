"""One construct per concern; the stacks only compose them.

(This package is ``infra.constructs``; the CDK's own ``constructs`` library is a different,
top-level package, which is why ``infra/app.py`` keeps ``infra/`` itself off ``sys.path``.)
"""
