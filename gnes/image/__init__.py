"""Image documents: decoding PNG/JPEG bytes and image arrays into what the image encoder takes."""
