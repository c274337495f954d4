# prodhcp %pre: the system user of /usr/lib/sysusers.d/prodhcp.conf, before the files whose
# group it owns are laid down (Fedora's %sysusers_create_compat does the same with useradd).
getent group prodhcp >/dev/null || groupadd -r prodhcp
getent passwd prodhcp >/dev/null ||
    useradd -r -g prodhcp -d /var/lib/prodhcp -M -s /sbin/nologin -c "prodhcp DHCP server" prodhcp
exit 0
