"""How a streamed answer is shown in a chat that limits its writes: split into messages
(`splitting`), paced within the rate limits (`pacing`), and kept up to date with the newest text
(`reply`). Knows nothing of Discord itself: a `ReplySink` does the writing."""
