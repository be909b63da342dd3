# The DRIVE OS build image: NVIDIA's DRIVE OS SDK build container (NGC, needs `docker login nvcr.io`)
# with the TensorRT cross-compilation packages installed once, from the repo .deb you download from
# NVONLINE. fbocc builds it with networking off and tags it fbocc/build:<profile>-<content hash>, so
# the install happens once per .deb. This replaces the manual steps of the public FB-OCC deployment
# guide (`dpkg -i nv-tensorrt-repo-...-cross-ga-..._amd64.deb && apt install tensorrt-safe-cross-aarch64`).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG TRT_DEB
ARG TRT_PACKAGES="tensorrt-safe-cross-aarch64"
COPY ${TRT_DEB} /tmp/fbocc/${TRT_DEB}
# The repo .deb drops a local apt repository under /var (keyring .gpg, or a .pub key in older releases)
# and a sources.list.d entry for it; update and install from that entry only: the build has no network.
RUN set -eu; \
    dpkg -i /tmp/fbocc/${TRT_DEB}; \
    for key in /var/nv-tensorrt-*/*.gpg; do \
      [ -f "$key" ] && cp "$key" /usr/share/keyrings/ || true; \
    done; \
    for pub in /var/nv-tensorrt-*/*.pub; do \
      [ -f "$pub" ] && apt-key add "$pub" || true; \
    done; \
    list=$(grep -l -s 'nv-tensorrt' /etc/apt/sources.list.d/*.list | head -n 1); \
    [ -n "$list" ] || { echo "fbocc: ${TRT_DEB} did not create an apt source for its local repo" >&2; exit 2; }; \
    apt-get update -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- ${TRT_PACKAGES}; \
    rm -rf /tmp/fbocc /var/lib/apt/lists/*
