"""Deployment rehearsal: the rendered Kubernetes manifests (and docker-compose.yml) run on this
machine the way their pod specs say (``energy deploy rehearse``).

:mod:`energy.deploy.manifest` turns rendered manifests into process specs (pure, no I/O);
:mod:`energy.deploy.sandbox` writes the mount-namespace script of one container (pure);
:mod:`energy.deploy.rehearse` renders, starts, probes and stops the processes;
:mod:`energy.deploy.compose` checks docker-compose.yml's commands and variables.
"""
