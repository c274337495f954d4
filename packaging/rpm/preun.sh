# prodhcp %preun (%systemd_preun): on erase (not upgrade) disable and stop the unit.
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload disable --now prodhcpd.service >/dev/null 2>&1 || :
fi
exit 0
