"""Training data for a PaCoRe synthesizer (paper §2.2): message pools, episodes, stage filters, rewards, exports.

The inference half of PaCoRe is the rest of the package; this face builds what an RL framework trains on: for each
problem a pool of compacted round-1 messages, episodes that present P(x, M) in the official template, and rewards
that grade the synthesis after its last ``</think>``. Training itself is left to TRL (one machine) or verl (a Ray
cluster).
"""
