"""Multi-host training: several processes (machines) train one model with a class-sharded head.

Keras' own multi-host distribution on the JAX backend: every process calls
``keras.distribution.initialize(...)``, then ``km.distribution.class_parallel()`` spans the
devices of *all* processes: the head's C columns are split over every device, the batch
over every device too. Each process feeds its own share of every global batch
(``auto_shard_dataset = False``); the loss and metrics are those of the global batch.
Trains ArcFace (or Partial FC) on scikit-learn's bundled digits.

On this machine, two processes talking over localhost (CPU devices, gloo collectives):

    python examples/multi_host.py --launch-local 2

On real machines, run the same command on each of them, with the address of process 0
(any free port on it), the number of processes and this process's id (0 … n−1):

    # machine 0 (10.0.0.1)                  # machine 1
    python examples/multi_host.py \\         python examples/multi_host.py \\
        --coordinator 10.0.0.1:1234 \\           --coordinator 10.0.0.1:1234 \\
        --num-processes 2 --process-id 0        --num-processes 2 --process-id 1

or set ``KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234``,
``KERAS_DISTRIBUTION_NUM_PROCESSES=2`` and ``KERAS_DISTRIBUTION_PROCESS_ID=<id>`` and run
``python examples/multi_host.py`` (what a cluster launcher such as SLURM's ``srun`` can
export per task). On Cloud TPU pods ``keras.distribution.initialize()`` needs no arguments.
Every process must run the same program on the same data order: it takes its own rows of
each global batch.
"""

import argparse
import os
import socket
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch-local", type=int, default=0, metavar="N",
                        help="start N processes on this machine (CPU, localhost) and wait")
    parser.add_argument("--coordinator", default=None,
                        help="host:port of process 0 (default: $KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="number of processes (default: $KERAS_DISTRIBUTION_NUM_PROCESSES)")
    parser.add_argument("--process-id", type=int, default=None,
                        help="this process, 0 … n−1 (default: $KERAS_DISTRIBUTION_PROCESS_ID)")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="simulate this many CPU devices per process (local testing)")
    parser.add_argument("--model-axis-size", type=int, default=None,
                        help="devices sharing one copy of the head (default: all)")
    parser.add_argument("--loss", choices=("arcface", "partial_fc"), default="arcface")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="--launch-local: seconds before the processes are stopped")
    return parser.parse_args(argv)


def launch_local(args, argv):
    """Start ``args.launch_local`` copies of this script on localhost and wait for them."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    rest, skip = [], False
    for item in argv:  # forward every option except --launch-local N
        if skip:
            skip = False
        elif item == "--launch-local":
            skip = True
        elif not item.startswith("--launch-local="):
            rest.append(item)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--coordinator", f"localhost:{port}",
             "--num-processes", str(args.launch_local), "--process-id", str(rank), *rest],
            env=env,
            stdout=None if rank == 0 else subprocess.DEVNULL,
        )
        for rank in range(args.launch_local)
    ]
    deadline = time.time() + args.timeout
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=max(deadline - time.time(), 1.0)))
    finally:
        for proc in procs:  # a process whose peer died would wait for it forever
            if proc.poll() is None:
                proc.kill()
    return max(abs(code) for code in codes) if codes else 1


def share(x, y, batch_size, processes, rank):
    """This process's rows of every global batch (the global batches are the arrays in order)."""
    steps = len(x) // batch_size
    local = batch_size // processes
    rows = [step * batch_size + rank * local + i for step in range(steps) for i in range(local)]
    return x[rows], y[rows]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.launch_local:
        if args.launch_local < 1:
            raise ValueError(f"`--launch-local` must be >= 1; got {args.launch_local}.")
        return launch_local(args, argv)

    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["KERAS_BACKEND"] != "jax":
        raise SystemExit("keras.distribution multi-host training needs KERAS_BACKEND=jax.")
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.cpu_devices}"
        )
    import jax

    # CPU devices of different processes talk through gloo (GPUs/TPUs use their own links).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    import keras

    # 1. Join the cluster: before any other JAX computation. Arguments left None are read
    #    from the KERAS_DISTRIBUTION_* environment variables.
    keras.distribution.initialize(
        job_addresses=args.coordinator, num_processes=args.num_processes,
        process_id=args.process_id,
    )
    import keras_margins as km

    processes, rank = jax.process_count(), jax.process_index()
    devices = jax.device_count()

    # 2. The distribution: the head's classes over all devices of all processes; each process
    #    feeds its own rows (so Keras must not split the data again).
    distribution = km.distribution.class_parallel(model_axis_size=args.model_axis_size)
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    shards = distribution.model_axis_size

    # 3. Data: every process loads the same arrays and keeps its rows of each global batch.
    (x, y), (x_test, y_test) = km.data.digits_classification()
    batch = args.batch_size
    if batch % devices:
        raise SystemExit(f"--batch-size {batch} must be a multiple of the {devices} devices.")
    x_local, y_local = share(x, y, batch, processes, rank)
    test_batch = (len(x_test) // devices) * devices
    xt_local, yt_local = share(x_test, y_test, test_batch, processes, rank)

    # 4. Model, built under the distribution: the head's columns are split at creation. The
    #    number of columns must be a multiple of the shards: extra classes never occur as
    #    labels and cost nothing but memory.
    num_classes = -(-10 // shards) * shards
    keras.utils.set_random_seed(0)  # same initial weights in every process
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                                 keras.layers.Dense(64)], name="embedding")
    if args.loss == "partial_fc":
        head = km.layers.LargestMarginHead(num_classes, kernel_layout="class_major", name="head")
        loss = km.losses.PartialFC(km.losses.ArcFace(), sample_rate=0.5, seed=0)
    else:
        head = km.layers.LargestMarginHead(num_classes, name="head")
        loss = km.losses.ArcFace()
    model = km.models.MarginModel(backbone, head)
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, metrics=["accuracy"], jit_compile=True)

    verbose = 2 if rank == 0 else 0
    if rank == 0:
        print(f"{processes} processes, {devices} devices; head of {num_classes} classes split "
              f"over {shards} devices: {num_classes // shards} columns each; global batch "
              f"{batch}, {batch // processes} rows fed by each process")
    start = time.time()
    history = model.fit(x_local, y_local, batch_size=batch // processes, epochs=args.epochs,
                        shuffle=False, verbose=verbose)
    scores = model.evaluate(xt_local, yt_local, batch_size=test_batch // processes, verbose=0,
                            return_dict=True)
    if rank == 0:
        prototypes = km.distribution.class_variable(head)  # (D, C) kernel or (C, D) centers
        per_device = {tuple(s.data.shape) for s in prototypes.value.addressable_shards}
        print(f"head prototypes {tuple(prototypes.shape)}, on each device: {sorted(per_device)}")
        print(f"final training loss {history.history['loss'][-1]:.4f}")
        print(f"test accuracy {scores['accuracy']:.4f} on {test_batch} digits "
              f"({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
