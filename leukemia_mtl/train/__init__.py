"""Multistage transfer learning: split and arrays (data), fitting (finetune), the stage runner (stage)."""
