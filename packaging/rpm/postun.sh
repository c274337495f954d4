# prodhcp %postun (%systemd_postun_with_restart): reload units; on upgrade try-restart the
# daemon (the lease table survives a restart). Erase keeps /var/lib/prodhcp and
# /var/log/prodhcp (rpm has no purge: remove them by hand).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart prodhcpd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
