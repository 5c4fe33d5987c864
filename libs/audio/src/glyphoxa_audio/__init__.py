"""Audio: opus codec, WAV I/O, resampling, the playback jitter buffer."""
