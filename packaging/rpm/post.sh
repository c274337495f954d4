# prodhcp %post: state and log directories (kept on erase, like the Debian package's remove),
# then %systemd_post: the unit's preset on a first install. Not started: the shipped
# configuration serves nothing.
for d in /var/lib/prodhcp /var/log/prodhcp; do
    [ -d "$d" ] || install -d -m 0750 -o prodhcp -g prodhcp "$d"
done
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload preset prodhcpd.service >/dev/null 2>&1 || :
fi
exit 0
