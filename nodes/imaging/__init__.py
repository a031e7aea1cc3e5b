"""Pixels and latents: image files, resizing, VAE encode/decode, live previews."""
