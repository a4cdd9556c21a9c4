import pytest

from tests.support import machine


@pytest.fixture
def vm1():
    vm, vcpus, ram = machine.make_vm(1)
    yield vm, vcpus[0], ram
    vm.close()
