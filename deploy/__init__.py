"""The code that runs on the target: Python 3.8, the standard library and numpy (+ tensorrt, lazily).

It imports nothing of fbocc. The host imports this package normally (`from deploy import manifest`)
for the contract both sides share, and pushes its files to the target, where they run as modules from
the pushed set's root: `cd <workdir>/current && python3 -m deploy.bench env ...`.
"""
