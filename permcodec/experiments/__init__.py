"""The experiment harness behind ``permcodec train``, ``evaluate`` and ``profile``.

``models`` (LeNet, Conv-n, ResNet-20, ...), ``data`` (Fashion-MNIST, MNIST, CIFAR-10,
the embedded digits), ``train`` (one training run, LaPerm or a plain baseline, and its
log, plot and `.perm` output), ``profile`` (weight profiles and rank movement). Built
on the trainer; nothing below imports it.
"""
