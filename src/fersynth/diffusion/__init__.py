"""Stable Diffusion synthesis: pipeline loading, prompts and the two generate backends.

Nothing is imported here: generation.BACKENDS imports `fersynth.diffusion.backends` only when a
diffusion backend runs, so the GAN path never pays for loading diffusers.
"""
