"""The Accelerate meta-fine-tuning stack behind `hf-icl train`: config, setup (tasks and
learner), loop, evaluation during training, checkpoints and the end-of-run report.

Kept empty so that reading a train config (``hf_icl.training.config``) imports no torch.
"""
