"""The network and everything that runs it: frontend, SF-NFNet, branches, checkpoints, embedding, the torch vocoders, invariance curves and the match. The only engine room that imports torch."""
