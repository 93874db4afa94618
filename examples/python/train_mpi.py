"""Data-parallel training from Python under mpirun: every rank runs this script with the same
arguments and data, trains on its rows of each step's global batch (Model.fit with an mpi4py
communicator), and keeps the same weights; rank 0 prints the losses and writes the weights. The
same run as `softpick train` under mpirun with the same options. Debian's python3-mpi4py.

    mpirun -np 2 python3 examples/python/train_mpi.py --input X.npy --target T.npy --output W.safetensors

Without --input it trains on generated data: 64 sequences of 8 steps of 16 features, 4 classes.
"""
import argparse

import numpy as np
from mpi4py import MPI

import softpick

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--input")
ap.add_argument("--target")
ap.add_argument("--output", default="train_mpi.safetensors")
ap.add_argument("--hidden", type=int, default=32)
ap.add_argument("--heads", type=int, default=2)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--outputs", type=int, default=4)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--clip-norm", type=float, default=0.0)
ap.add_argument("--dropout", type=float, default=0.0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--init-seed", type=int, default=1)
ap.add_argument("--shuffle", action="store_true")
args = ap.parse_args()

comm = MPI.COMM_WORLD
if args.input:
    x, t = np.load(args.input), np.load(args.target)
else:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 16)).astype(np.float32)
    t = (np.abs(x[:, -1, :4]).argmax(-1)).astype(np.int32)
with softpick.Context() as ctx:
    model = softpick.Model(ctx, x.shape[2], hidden_size=args.hidden, num_heads=args.heads, num_layers=args.layers,
                           window_size=x.shape[1], num_outputs=args.outputs, seed=args.init_seed)
    losses = model.fit(x, t, steps=args.steps, batch_size=args.batch_size, lr=args.lr, loss="cross-entropy",
                       clip_norm=args.clip_norm, dropout=args.dropout, seed=args.seed, shuffle=args.shuffle,
                       comm=comm, progress=False)
    if comm.Get_rank() == 0:
        for i, loss in enumerate(losses):
            print("step %d  loss %.9g" % (i + 1, loss))
        model.save(args.output)
        print("%d ranks, global batch %d: loss %.4f -> %.4f; weights in %s"
              % (comm.Get_size(), args.batch_size, losses[0], losses[-1], args.output))
