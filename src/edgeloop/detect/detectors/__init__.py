"""The detector implementations; each module registers its classes with ``edgeloop.detect.registry``."""
