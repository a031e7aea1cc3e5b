"""Names for DiffusersSampler's choices, kept free of imports so node listing stays instant."""

# diffusers scheduler classes that work with an SD UNet's epsilon/v prediction (a test checks each
# exists in the installed diffusers and runs).
SCHEDULER_CLASSES = (
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "DDIMScheduler",
    "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
    "SASolverScheduler", "LCMScheduler", "TCDScheduler",
)
SIGMA_OPTIONS = ("default", "karras", "exponential", "beta")
