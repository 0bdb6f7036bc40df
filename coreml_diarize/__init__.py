"""coreml-diarize: pyannote speaker-diarization models as verified Core ML packages."""

__version__ = "0.1.0"
