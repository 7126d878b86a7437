"""Blue/green deployment (``task=deploy``): one flow (``flow.py``) over targets that each
know how to put a version on a colour, split traffic and report state (``target.py``)."""
