"""The network and everything that runs it: frontend, SF-NFNet, branches, checkpoints, embedding. The only engine room that imports torch."""
