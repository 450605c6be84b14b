@ 0x00000007
i 2244653
o 343
l <S2244653AbmLFR4mfTHrl/20261206175642Z+1@mail.example.org>
e root <root>
e root@mail.example.org
s local root@mail.example.org root@mail.example.org 1
r           local root root@mail.example.org 65534
N ORCPT=rfc822;root INRCPT=rfc822;root INFROM=rfc822;root
r           smtp example.net nobody@example.net 65534
N ORCPT=rfc822;nobody@example.net INRCPT=rfc822;nobody@example.net INFROM=rfc822;root
r           smtp Example.NET User@Example.NET 65534
N ORCPT=rfc822;User@Example.NET INRCPT=rfc822;User@Example.NET INFROM=rfc822;root
m
Received: ("??"@vm) by mail.example.org id S2244653AbmLFR4mfTHrl;
	Sun, 6 Dec 2026 17:56:42 +0000
From:	root <root@mail.example.org>
Subject: t
Message-Id: <S2244653AbmLFR4mfTHrl/20261206175642Z+1@mail.example.org>
To:	unlisted-recipients:; (no To-header on input)
Date:	Sun, 6 Dec 2026 17:56:42 +0000

