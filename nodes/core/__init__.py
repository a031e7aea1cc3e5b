"""What every SD node shares: the values on edges, file inputs, the environment, the device policy.
Cheap to import (no torch)."""
