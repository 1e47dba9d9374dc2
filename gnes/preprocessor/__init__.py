"""Preprocessors: split a document into chunks (sentences, windows, image crops, frames) before
it is encoded. Each chunk keeps its document's id and its offset within the document."""
