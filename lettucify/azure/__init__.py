"""Azure ML: clusters, environments, distributed command jobs and online endpoints, built offline.

``client`` is the one seam that talks to the service; ``entities`` builds the
azure-ai-ml objects of jobs, ``online`` those of ``deploy=azure_online``'s endpoint and
deployments (and Azure's traffic rules); ``submit`` is ``compute=azure_*``'s single run;
``local`` runs a job's exact command here, one process per emulated node. azure-ai-ml is
imported only by these modules, so nothing else pays for it.
"""
