"""How to make the environment that runs a user's FB-BEV tree (text only; doctor and fbbev.py share it)."""

REQUIREMENTS = {"mmcv": "1.7.0 (MMCV_WITH_OPS=0)", "mmdet": "2.28.2", "mmsegmentation": "0.30.0"}
SETUP_RECIPE = (
    "python3 -m venv VENV && VENV/bin/pip install torch==2.13.0 numpy 'setuptools<70' wheel && "
    "MMCV_WITH_OPS=0 VENV/bin/pip install --no-build-isolation mmcv==1.7.0 && "
    "VENV/bin/pip install yapf==0.40.1 opencv-python-headless tqdm terminaltables six prettytable onnx "
    "onnx-graphsurgeon && "
    "VENV/bin/pip install --no-deps mmdet==2.28.2 mmsegmentation==0.30.0; then, in the FB-BEV tree, the "
    "steps of deployment/README.md 'Third-Party Custom Operations': copy grid_sampler.py, bev_pool_v2.py, "
    "multi_scale_deformable_attn.py from BEVFormer_tensorrt@303d314 det2trt/models/functions/ into "
    "mmdet3d/models/fbbev/custom_ops/ and `git apply --include='mmdet3d/*' deployment/fbocc_custom_ops_plugin.patch`"
)
