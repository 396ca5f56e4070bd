"""The model repository and its proof: every version proved from its artifact before it serves
(prover, torchscript_proof), the registry of proven versions (registry), and reloads without a
restart (lifecycle: the poller and the control operations).

May import: service.compute, service.base, service.settings, contract.
"""
