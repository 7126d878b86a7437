"""Azure ML: clusters, environments and distributed command jobs, built offline.

``client`` is the one seam that talks to the service; ``entities`` builds the
azure-ai-ml objects; ``submit`` is ``compute=azure_*``'s single run; ``local`` runs a
job's exact command here, one process per emulated node. azure-ai-ml is imported only
by these modules, so nothing else pays for it.
"""
