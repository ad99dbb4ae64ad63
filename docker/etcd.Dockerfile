# The etcd image: built by scripts/docker-build.sh from the host's etcd (Debian package etcd-server) and
# the shared libraries it needs — nothing is pulled from a registry.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
EXPOSE 2379
CMD ["etcd", "--data-dir", "/var/lib/etcd"]
