from .batch_tracking import BatchTracker as BatchTracker
from .batch_tracking import TrackedDataset as TrackedDataset
from .final_model import FinalModelExport as FinalModelExport
from .final_model import load_final_model as load_final_model
from .health import HEALTH_EXIT_CODE as HEALTH_EXIT_CODE
from .health import HealthCheckFailed as HealthCheckFailed
from .health import HealthGuard as HealthGuard
from .step_checkpoint import StepCheckpoint as StepCheckpoint
