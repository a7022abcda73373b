"""KFP components: thin adapters from KFP artifacts and parameters to one library call each.

Every component is a lightweight `@dsl.component` whose base image is the project's own image
(built from docker/), so on a cluster each stage runs in its own container, and kfp.local runs
the same code in this environment. Imports live inside the function bodies: KFP copies the
function's source, not this module.
"""

from leukemia_mtl.config import ImageConfig

BASE_IMAGE = ImageConfig().cpu_image
